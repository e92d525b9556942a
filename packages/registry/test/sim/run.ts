/**
 * The simulation from the command line, for long runs and replays:
 *   node packages/registry/dist/test/sim/run.js --seeds 1000          every scenario, seeds 1..1000
 *   node packages/registry/dist/test/sim/run.js --scenario chaos --seed 42   one run, with its trace
 * Exits 1 on the first failure, printing the seed that replays it.
 */
import { SCENARIOS, SimFailure } from './scenarios.js';

function usage(message: string): never {
  console.error(`run.js: ${message}`);
  process.exit(2);
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return undefined;
  const v = process.argv[i + 1];
  if (v === undefined || v.startsWith('--')) usage(`--${name} needs a value`);
  return v;
}

/** A seed or a count: a whole number from 1 to 2^32 - 1 (the generator's state is 32 bits, so larger ones would alias smaller ones). */
function seedOf(name: string, v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n >= 2 ** 32) usage(`--${name} ${v}: give a whole number from 1 to ${2 ** 32 - 1}`);
  return n;
}

async function main(): Promise<void> {
  const only = arg('scenario');
  const seed = arg('seed');
  const seeds = seedOf('seeds', arg('seeds') ?? '20');
  const first = seedOf('from', arg('from') ?? '1');
  const names = only ? [only] : Object.keys(SCENARIOS);
  for (const n of names) if (!SCENARIOS[n]) usage(`unknown scenario ${n} (known: ${Object.keys(SCENARIOS).join(', ')})`);
  const list = seed !== undefined ? [seedOf('seed', seed)] : Array.from({ length: seeds }, (_, i) => first + i);
  for (const name of names) {
    const run = SCENARIOS[name]!;
    let worst = 0;
    const started = Date.now();
    for (const s of list) {
      try {
        const r = await run(s);
        worst = Math.max(worst, r.convergedMs);
        if (seed !== undefined) console.log(`${name} seed ${s}: converged ${r.convergedMs} ms after the heal (bound ${r.boundMs} ms), ${r.messages} messages`);
      } catch (err) {
        if (err instanceof SimFailure) {
          console.error(err.message);
          console.error(`last events:\n  ${err.trace.slice(-60).join('\n  ')}`);
        } else console.error(err);
        process.exit(1);
      }
    }
    console.log(`${name}: ${list.length} seeds passed, slowest convergence ${worst} ms simulated, ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }
}

await main();
