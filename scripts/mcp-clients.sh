# Installs the official MCP client SDKs the interoperability tests drive
# (testnet/tests/clients.rs) into the build cache, once, and exports where
# they are. Sourced by scripts/test.sh after setup.sh.
#   ZEROMESH_MCP_PYTHON  a Python with mcp[ws]==1.30.0
#   ZEROMESH_MCP_TS_DIR  a folder whose node_modules holds @modelcontextprotocol/sdk 1.x and ws
#   ZEROMESH_MCP_CONFORMANCE_DIR  a folder with the MCP conformance suite and Node 22
mcp_clients="${XDG_CACHE_HOME:-$HOME/.cache}/zeromesh/mcp-clients"
mcp_python_sdk="mcp[ws]==1.30.0"
mcp_ts_sdk=("@modelcontextprotocol/sdk@1.32.2" "ws@8")
mcp_conformance=("@modelcontextprotocol/conformance@0.1.16" "node@22")
if ! "$mcp_clients/venv/bin/python" -c "import mcp.client.websocket, websockets" 2>/dev/null; then
    echo "mcp-clients: installing the Python SDK ($mcp_python_sdk)"
    rm -rf "$mcp_clients/venv"
    python3 -m venv "$mcp_clients/venv"
    "$mcp_clients/venv/bin/pip" install --quiet --disable-pip-version-check "$mcp_python_sdk"
fi
if [ ! -f "$mcp_clients/ts/node_modules/@modelcontextprotocol/sdk/package.json" ] || [ ! -d "$mcp_clients/ts/node_modules/ws" ]; then
    echo "mcp-clients: installing the TypeScript SDK (${mcp_ts_sdk[*]})"
    mkdir -p "$mcp_clients/ts"
    (cd "$mcp_clients/ts" && { [ -f package.json ] || echo '{ "private": true, "type": "module" }' > package.json; } \
        && npm install --silent --no-audit --no-fund "${mcp_ts_sdk[@]}")
fi
if [ ! -x "$mcp_clients/conformance/node_modules/.bin/node" ] || [ ! -f "$mcp_clients/conformance/node_modules/@modelcontextprotocol/conformance/dist/index.js" ]; then
    echo "mcp-clients: installing the conformance suite (${mcp_conformance[*]})"
    mkdir -p "$mcp_clients/conformance"
    (cd "$mcp_clients/conformance" && { [ -f package.json ] || echo '{ "private": true }' > package.json; } \
        && npm install --silent --no-audit --no-fund "${mcp_conformance[@]}")
fi
export ZEROMESH_MCP_PYTHON="$mcp_clients/venv/bin/python"
export ZEROMESH_MCP_TS_DIR="$mcp_clients/ts"
export ZEROMESH_MCP_CONFORMANCE_DIR="$mcp_clients/conformance"
