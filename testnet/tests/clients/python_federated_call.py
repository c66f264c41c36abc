"""The official MCP Python SDK 2.x calls one tool through a zeromesh node
over Streamable HTTP, in both protocol eras, and checks its text.

usage: python_federated_call.py <http://node/mcp> <token> <tool> <arguments as JSON> <expected text>

The federation tests use it on a federated server's tool: the node answers
for a server it may reach in another era than its client's. Exits non-zero
with the reason on any failure.
"""

import json
import sys

import anyio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def call(url: str, token: str, tool: str, arguments: dict, expected: str, mode: str) -> None:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
        names = {listed.name for listed in (await client.list_tools()).tools}
        assert tool in names, (mode, names)
        result = await client.call_tool(tool, arguments)
        assert not result.is_error, (mode, result)
        assert result.content[0].text == expected, (mode, result)


async def main(url: str, token: str, tool: str, arguments: str, expected: str) -> None:
    for mode in ("auto", "legacy"):
        await call(url, token, tool, json.loads(arguments), expected, mode)
    print("client: ok")


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:6])
