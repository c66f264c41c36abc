// The official TypeScript client (@modelcontextprotocol/client 2.x),
// unmodified, over Streamable HTTP against two authenticated nodes, in both
// protocol eras: with `versionNegotiation: { mode: 'auto' }` it discovers
// 2026-07-28 and subscribes with `subscriptions/listen`; with its default
// (the handshake) it initialises a session and subscribes with
// `resources/subscribe`. Each hears of a write made through the other node.
//
// usage: node ts_http_client.mjs <http://first/mcp> <http://second/mcp> <token>
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';

const [first, second, token] = process.argv.slice(2);
const WAIT_MS = 30_000;

async function connect(url, options = {}) {
    const client = new Client({ name: 'zeromesh-test', version: '1.0.0' }, options);
    const headers = { Authorization: `Bearer ${token}` };
    await client.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } }));
    return client;
}

function check(condition, message) {
    if (!condition) throw new Error(message);
}

/** Resolves with the URI of the next `notifications/resources/updated` `client` hears. */
function nextUpdate(client) {
    return new Promise((resolve, reject) => {
        client.setNotificationHandler('notifications/resources/updated', (notification) => resolve(notification.params.uri));
        setTimeout(() => reject(new Error(`no update within ${WAIT_MS} ms`)), WAIT_MS).unref();
    });
}

async function writeThrough(client, path, value) {
    const written = await client.callTool({ name: 'memory_put', arguments: { path, value } });
    check(!written.isError, JSON.stringify(written));
}

async function modern() {
    const uri = 'mem://ts-http/notes/today';
    const one = await connect(first, { versionNegotiation: { mode: 'auto' } });
    const two = await connect(second, { versionNegotiation: { mode: 'auto' } });
    check(one.getNegotiatedProtocolVersion() === '2026-07-28', `negotiated ${one.getNegotiatedProtocolVersion()}`);
    const { tools } = await one.listTools();
    check(tools.some((tool) => tool.name === 'memory_put'), `memory_put missing from ${tools.map((t) => t.name)}`);
    await writeThrough(one, 'ts-http/notes/today', 'first');
    const read = await one.readResource({ uri });
    check(read.contents[0].text === 'first', JSON.stringify(read));
    const updated = nextUpdate(one);
    const subscription = await one.listen({ resourceSubscriptions: [uri] });
    check(subscription.honoredFilter.resourceSubscriptions?.includes(uri), JSON.stringify(subscription.honoredFilter));
    await writeThrough(two, 'ts-http/notes/today', 'second');
    check((await updated) === uri, 'the update names the memory');
    await subscription.close();
    const again = await one.readResource({ uri });
    check(again.contents[0].text === 'second', JSON.stringify(again));
    await one.close();
    await two.close();
}

async function legacy() {
    const uri = 'mem://ts-http/notes/legacy';
    const one = await connect(first);
    const two = await connect(second);
    check(one.getNegotiatedProtocolVersion() !== '2026-07-28', `negotiated ${one.getNegotiatedProtocolVersion()}`);
    await writeThrough(one, 'ts-http/notes/legacy', 'first');
    const updated = nextUpdate(one);
    await one.subscribeResource({ uri });
    await writeThrough(two, 'ts-http/notes/legacy', 'second');
    check((await updated) === uri, 'the update names the memory');
    await one.close();
    await two.close();
}

await modern();
await legacy();
console.log('ts http client: ok');
