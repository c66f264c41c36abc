// The official MCP TypeScript SDK (WebSocketClientTransport, with the `ws`
// package as the WebSocket on Node 20) against two zeromesh nodes.
//
// usage: node ts_client.mjs <ws://first-node> <ws://second-node>
//
// Connects to the first node, initialises, lists and calls tools, reads a
// memory as a resource and subscribes to it; writes the memory through the
// second node and waits for notifications/resources/updated.

import WebSocket from "ws";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { WebSocketClientTransport } from "@modelcontextprotocol/sdk/client/websocket.js";
import { ResourceUpdatedNotificationSchema } from "@modelcontextprotocol/sdk/types.js";

globalThis.WebSocket ??= WebSocket;
const [first, second] = process.argv.slice(2);
const uri = "mem://ts-agent/notes/today";

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
}

async function connect(url) {
  const client = new Client({ name: "zeromesh-ts-test", version: "1.0.0" });
  await client.connect(new WebSocketClientTransport(new URL(url)));
  return client;
}

const client = await connect(first);
check(client.getServerVersion()?.name === "zeromesh", "server info");
check(client.getServerCapabilities()?.resources?.subscribe === true, "resources.subscribe capability");
const updated = new Promise((resolve) =>
  client.setNotificationHandler(ResourceUpdatedNotificationSchema, (notification) => {
    if (notification.params.uri === uri) resolve();
  }),
);
const tools = (await client.listTools()).tools.map((tool) => tool.name);
check(tools.includes("memory_put") && tools.includes("cluster_status"), `tools ${tools}`);
const written = await client.callTool({ name: "memory_put", arguments: { path: "ts-agent/notes/today", value: "from ts" } });
check(!written.isError && written.structuredContent.outcome === "written", JSON.stringify(written));
let read = await client.readResource({ uri });
check(read.contents[0].text === "from ts", JSON.stringify(read));
await client.subscribeResource({ uri });

const writer = await connect(second);
const changed = await writer.callTool({ name: "memory_put", arguments: { path: "ts-agent/notes/today", value: "changed" } });
check(!changed.isError, JSON.stringify(changed));
await writer.close();

await Promise.race([
  updated,
  new Promise((_, reject) => setTimeout(() => reject(new Error("no resources/updated within 30 s")), 30000)),
]);
read = await client.readResource({ uri });
check(read.contents[0].text === "changed", JSON.stringify(read));
await client.close();
console.log("ts client: ok");
process.exit(0);
