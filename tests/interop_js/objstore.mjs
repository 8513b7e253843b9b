// The JavaScript nats client's Object Store, driven by JSON commands, for objfs's
// wire-compatibility tests (tests/test_interop.py).
//
// Usage: node objstore.mjs SERVER_URL < commands.json
// stdin holds a JSON array of commands; they run in order on one connection (one node start
// per test keeps the tests fast) and stdout receives a JSON array with one result per command.
// A command that fails yields {"error": "..."} and the next commands still run.
//
// Commands:
//   {"op": "put", "bucket", "name", "file", "description"?, "headers"?, "chunk_size"?}
//       -> the ObjectInfo the client returns
//   {"op": "get", "bucket", "name", "out"?}  -> {"sha256": hex, "size": n, "info": ObjectInfo}
//       (follows links as the client does; writes the bytes to "out" when given)
//   {"op": "info", "bucket", "name"}         -> ObjectInfo, or null when missing
//   {"op": "link", "bucket", "name", "target_bucket", "target_name"?}
//       -> the link's ObjectInfo (a bucket link when target_name is absent)
//   {"op": "list", "bucket"}                 -> [ObjectInfo, ...]
// An ObjectInfo is the meta as the server holds it (name, bucket, nuid, size, chunks, digest,
// options, headers, metadata, ...), plus the revision the client adds.
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { connect, headers as natsHeaders } from "nats";

function plain(oi) {
  // ObjectInfoImpl keeps the server's JSON in .info (headers stay a plain record there);
  // list() yields the server's JSON itself.
  if (oi === null) return null;
  return typeof oi.isLink === "function" ? { ...oi.info } : { ...oi };
}

async function store(js, bucket) {
  // views.os creates the bucket when it is missing, like every official client.
  return js.views.os(bucket);
}

async function readAll(stream) {
  const hash = createHash("sha256");
  const parts = [];
  let size = 0;
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    hash.update(value);
    parts.push(value);
    size += value.length;
  }
  return { sha256: hash.digest("hex"), size, data: Buffer.concat(parts) };
}

async function run(js, cmd) {
  const os = await store(js, cmd.bucket);
  switch (cmd.op) {
    case "put": {
      const meta = { name: cmd.name, description: cmd.description ?? "" };
      if (cmd.headers) {
        const h = natsHeaders();
        for (const [k, values] of Object.entries(cmd.headers)) {
          for (const v of values) h.append(k, v);
        }
        meta.headers = h;
      }
      if (cmd.chunk_size) meta.options = { max_chunk_size: cmd.chunk_size };
      return plain(await os.putBlob(meta, new Uint8Array(readFileSync(cmd.file))));
    }
    case "get": {
      const r = await os.get(cmd.name);
      if (r === null) return null;
      const [all, err] = await Promise.all([readAll(r.data), r.error]);
      if (err) throw err;
      if (cmd.out) writeFileSync(cmd.out, all.data);
      return { sha256: all.sha256, size: all.size, info: plain(r.info) };
    }
    case "info":
      return plain(await os.info(cmd.name));
    case "link": {
      if (cmd.target_name === undefined || cmd.target_name === null) {
        return plain(await os.linkStore(cmd.name, await store(js, cmd.target_bucket)));
      }
      const target = await (await store(js, cmd.target_bucket)).info(cmd.target_name);
      if (target === null) throw new Error(`link target ${cmd.target_name} not found`);
      return plain(await os.link(cmd.name, target));
    }
    case "list":
      return (await os.list()).map(plain);
    default:
      throw new Error(`unknown op ${cmd.op}`);
  }
}

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const commands = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const nc = await connect({ servers: process.argv[2], timeout: 5000 });
const js = nc.jetstream({ timeout: 10000 });
const results = [];
try {
  for (const cmd of commands) {
    try {
      results.push(await run(js, cmd));
    } catch (e) {
      results.push({ error: String(e?.message ?? e) });
    }
  }
} finally {
  await nc.close();
}
process.stdout.write(JSON.stringify(results));
