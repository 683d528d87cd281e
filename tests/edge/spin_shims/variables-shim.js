// A host for `fermyon:spin/variables@2.0.0` under jco: like Spin's environment provider,
// variable `name` is read from SPIN_VARIABLE_<NAME>.
export function get(name) {
  const value = process.env['SPIN_VARIABLE_' + name.toUpperCase()];
  if (value === undefined) throw { tag: 'undefined', val: name };
  return value;
}
