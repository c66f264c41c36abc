"""The official MCP Python SDK against two zeromesh nodes.

usage: python_client.py <ws://first-node> <ws://second-node>

Connects to the first node, initialises, lists and calls tools, reads a
memory as a resource and subscribes to it; writes the memory through the
second node and waits for notifications/resources/updated. Exits non-zero
with the reason on any failure.
"""

import asyncio
import sys

from mcp import ClientSession, types
from mcp.client.websocket import websocket_client
from mcp.shared.exceptions import McpError
from pydantic import AnyUrl

URI = "mem://py-agent/notes/today"
WAIT_S = 30


async def main(first: str, second: str) -> None:
    updated = asyncio.Event()

    async def on_message(message) -> None:
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ResourceUpdatedNotification
        ):
            if str(message.root.params.uri) == URI:
                updated.set()

    async with websocket_client(first) as (read, write):
        async with ClientSession(read, write, message_handler=on_message) as session:
            initialized = await session.initialize()
            assert initialized.serverInfo.name == "zeromesh", initialized
            assert initialized.capabilities.resources.subscribe, initialized.capabilities
            names = [tool.name for tool in (await session.list_tools()).tools]
            assert "memory_put" in names and "cluster_status" in names, names
            written = await session.call_tool("memory_put", {"path": "py-agent/notes/today", "value": "from python"})
            assert not written.isError, written
            assert written.structuredContent["outcome"] == "written", written
            status = await session.call_tool("cluster_status", {})
            assert not status.isError, status
            try:
                await session.call_tool("memory_put", {"path": "no-name-segment"})
                raise AssertionError("an invalid memory path was accepted")
            except McpError as error:
                assert "path" in str(error), error
            read_back = await session.read_resource(AnyUrl(URI))
            assert read_back.contents[0].text == "from python", read_back
            templates = await session.list_resource_templates()
            assert templates.resourceTemplates[0].uriTemplate == "mem://{agent}/{path}", templates
            await session.subscribe_resource(AnyUrl(URI))

            async with websocket_client(second) as (read2, write2):
                async with ClientSession(read2, write2) as writer:
                    await writer.initialize()
                    changed = await writer.call_tool("memory_put", {"path": "py-agent/notes/today", "value": "changed"})
                    assert not changed.isError, changed

            await asyncio.wait_for(updated.wait(), WAIT_S)
            read_back = await session.read_resource(AnyUrl(URI))
            assert read_back.contents[0].text == "changed", read_back
    print("python client: ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
