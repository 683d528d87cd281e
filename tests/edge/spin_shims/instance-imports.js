// Loaded by `jco serve --jco-import` before the server starts. With `--isolate-requests
// instance` (a fresh component instance per request, as Spin does), jco builds each
// instance's imports from WASIShim alone; add the Spin interface shims to that object.
import { WASIShim } from '@bytecodealliance/preview2-shim/instantiation';
import * as keyValue from './kv-shim.js';
import * as variables from './variables-shim.js';

const wasiImports = WASIShim.prototype.getImportObject;
WASIShim.prototype.getImportObject = function getImportObject(...args) {
  return { ...wasiImports.apply(this, args), './kv-shim.js': keyValue, './variables-shim.js': variables };
};
