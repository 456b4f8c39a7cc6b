// Runs the built worker (build/index.js) in workerd through Miniflare, on loopback, for
// the tests and the benchmark. Bindings come as JSON in DSS_EDGE_BINDINGS. Prints
// "listening <url>" once ready; stops on SIGTERM or SIGINT (or when stdin closes, with
// DSS_EDGE_STDIN_LIFELINE=1).
import { Miniflare } from "miniflare";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const bindings = JSON.parse(process.env.DSS_EDGE_BINDINGS || "{}");
const mf = new Miniflare({
  scriptPath: path.join(root, "build/index.js"),
  modules: true,
  modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"] }],
  compatibilityDate: "2026-08-01",
  bindings,
  host: "127.0.0.1",
  port: Number(process.env.DSS_EDGE_PORT || 0),
  cf: false,
});
const url = await mf.ready;
console.log(`listening ${url.href.replace(/\/$/, "")}`);
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await mf.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
// A test harness holds our stdin open: when it goes away, so do we.
if (process.env.DSS_EDGE_STDIN_LIFELINE === "1") {
  process.stdin.on("end", stop);
  process.stdin.resume();
}
