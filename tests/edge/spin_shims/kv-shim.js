// A host for `fermyon:spin/key-value@2.0.0` under jco: one in-memory map per store label,
// written through to a JSON file (NLS_SPIN_KV_FILE) so it outlives a restart of the host.
// Only the store labels in NLS_SPIN_KV_STORES (comma separated; default "default") open, like
// spin.toml's key_value_stores.
import { readFileSync, writeFileSync } from 'node:fs';

const file = process.env.NLS_SPIN_KV_FILE;
const allowed = (process.env.NLS_SPIN_KV_STORES || 'default').split(',');
let data = {};
if (file) {
  try {
    data = JSON.parse(readFileSync(file, 'utf8'));
  } catch {}
}
const save = () => {
  if (file) writeFileSync(file, JSON.stringify(data));
};

export class Store {
  #label;
  constructor(label) {
    this.#label = label;
    data[label] ??= {};
  }
  static open(label) {
    if (!allowed.includes(label)) throw { tag: 'no-such-store' };
    return new Store(label);
  }
  get(key) {
    const value = data[this.#label][key];
    return value === undefined ? undefined : Buffer.from(value, 'base64');
  }
  set(key, value) {
    data[this.#label][key] = Buffer.from(value).toString('base64');
    save();
  }
  delete(key) {
    delete data[this.#label][key];
    save();
  }
  exists(key) {
    return Object.hasOwn(data[this.#label], key);
  }
  getKeys() {
    return Object.keys(data[this.#label]);
  }
}
