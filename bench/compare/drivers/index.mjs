/** The driver of a system kind (loaded in the load generator and the provider processes). */
export async function loadDriver(target, opts = {}) {
  const mod = await import(`./${target.kind}.mjs`);
  return mod.createDriver(target, opts);
}
