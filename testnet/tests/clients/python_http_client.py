"""The official MCP Python SDK 2.x over Streamable HTTP, against two
authenticated zeromesh nodes, in both protocol eras.

usage: python_http_client.py <http://first/mcp> <http://second/mcp> <token>

2026-07-28 (the SDK's default): discovers the node without a handshake,
lists and calls tools, reads a memory as a resource, then opens a
`subscriptions/listen` stream and hears of a write made through the second
node. Then the handshake era (`mode="legacy"`): `initialize`, a session, and
`resources/subscribe`, whose update arrives on the session's event stream.
Exits non-zero with the reason on any failure.
"""

import sys
import warnings

import anyio
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

WAIT_S = 30


def node(url: str, token: str):
    """A transport to `url` that presents `token`: the SDK's own client, with a header."""
    return streamable_http_client(url, http_client=create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}))


async def modern(first: str, second: str, token: str) -> None:
    uri = "mem://py-http/notes/today"
    async with Client(node(first, token)) as one, Client(node(second, token)) as two:
        assert one.protocol_version == "2026-07-28", one.protocol_version
        assert one.server_info.name == "zeromesh", one.server_info
        names = {tool.name for tool in (await one.list_tools()).tools}
        assert {"memory_put", "cluster_status"} <= names, names
        written = await one.call_tool("memory_put", {"path": "py-http/notes/today", "value": "first"})
        assert not written.is_error and written.structured_content["outcome"] == "written", written
        try:
            await one.call_tool("memory_put", {"path": "no-name-segment"})
            raise AssertionError("an invalid memory path was accepted")
        except MCPError as error:
            assert "path" in str(error), error
        read = await one.read_resource(uri)
        assert read.contents[0].text == "first", read
        async with one.listen(resource_subscriptions=[uri]) as subscription:
            assert subscription.honored.resource_subscriptions == [uri], subscription.honored
            changed = await two.call_tool("memory_put", {"path": "py-http/notes/today", "value": "second"})
            assert not changed.is_error, changed
            with anyio.fail_after(WAIT_S):
                async for event in subscription:
                    assert event.uri == uri, event
                    break
        read = await one.read_resource(uri)
        assert read.contents[0].text == "second", read


async def legacy(first: str, second: str, token: str) -> None:
    uri = "mem://py-http/notes/legacy"
    updated = anyio.Event()

    async def on_message(message) -> None:
        if isinstance(message, types.ResourceUpdatedNotification) and str(message.params.uri) == uri:
            updated.set()

    # resources/subscribe is the handshake era's way, deprecated for 2026-07-28.
    warnings.filterwarnings("ignore", message="resources/subscribe is removed")
    async with Client(node(first, token), mode="legacy", message_handler=on_message) as one:
        assert one.protocol_version != "2026-07-28", one.protocol_version
        assert one.server_capabilities.resources.subscribe, one.server_capabilities
        written = await one.call_tool("memory_put", {"path": "py-http/notes/legacy", "value": "first"})
        assert not written.is_error, written
        await one.subscribe_resource(uri)
        async with Client(node(second, token), mode="legacy") as two:
            changed = await two.call_tool("memory_put", {"path": "py-http/notes/legacy", "value": "second"})
            assert not changed.is_error, changed
        with anyio.fail_after(WAIT_S):
            await updated.wait()


async def main(first: str, second: str, token: str) -> None:
    await modern(first, second, token)
    await legacy(first, second, token)
    print("python http client: ok")


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:4])
