// Hocuspocus as a tandem-bench suite target, on loopback only.
//   node server.mjs <port>                 in memory (documents live until the process ends)
//   node server.mjs <port> <sqlite file>   with @hocuspocus/extension-sqlite, persisting like Tandem
// Hocuspocus' own defaults apply (debounce 2 s, maxDebounce 10 s before
// onStoreDocument writes the document), so what a kill -9 loses is theirs.
// No onAuthenticate hook: every token is accepted.
import { Server } from "@hocuspocus/server";
import { SQLite } from "@hocuspocus/extension-sqlite";

const port = Number(process.argv[2]);
const database = process.argv[3];
if (!Number.isInteger(port) || port <= 0) {
  console.error("usage: node server.mjs <port> [sqlite file]");
  process.exit(2);
}

const server = new Server({
  address: "127.0.0.1",
  port,
  quiet: true,
  extensions: database ? [new SQLite({ database })] : [],
});
await server.listen();
