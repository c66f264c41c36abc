# Installs the MCP clients the interoperability tests drive
# (testnet/tests/clients.rs), and the other tools from PyPI and npm that tests
# run, into the build cache, once per version, and exports where they are.
# Sourced by scripts/test.sh after setup.sh.
#   ZEROMESH_MCP_PYTHON           a Python with mcp[ws]==1.30.0 (handshake era, WebSocket)
#   ZEROMESH_MCP_PYTHON2          a Python with mcp==2.3.0 (both eras, Streamable HTTP)
#   ZEROMESH_MCP_TS_DIR           node_modules with @modelcontextprotocol/sdk 1.x and ws
#   ZEROMESH_MCP_TS2_DIR          node_modules with @modelcontextprotocol/client 2.x
#   ZEROMESH_MCP_CONFORMANCE_DIR  the MCP conformance suite (0.2) and Node 22
#   ZEROMESH_MCP_INSPECTOR_DIR    MCP Inspector (its CLI mode)
#   ZEROMESH_PLAYWRIGHT_DIR       node_modules with playwright-core, which drives
#                                 Debian's chromium (setup.sh) for the dashboard test
#   ZEROMESH_KUBERNETES_VALIDATE  kubernetes-validate, which checks deploy/kubernetes
#                                 against the Kubernetes API's schemas (testnet/tests/deploy.rs)
mcp_clients="${XDG_CACHE_HOME:-$HOME/.cache}/zeromesh/mcp-clients"

# python_sdk <folder> <requirement> <module to import>
python_sdk() {
    local venv="$mcp_clients/$1"
    if ! "$venv/bin/python" -c "import $3" 2>/dev/null || [ "$(cat "$venv/.requirement" 2>/dev/null)" != "$2" ]; then
        echo "mcp-clients: installing $2"
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "$2"
        echo "$2" > "$venv/.requirement"
    fi
}

# npm_packages <folder> <package>@<version>...: installed unless the folder
# already holds exactly these.
npm_packages() {
    local folder="$mcp_clients/$1"
    shift
    if [ "$(cat "$folder/.packages" 2>/dev/null)" != "$*" ]; then
        echo "mcp-clients: installing $*"
        rm -rf "$folder"
        mkdir -p "$folder"
        (cd "$folder" && echo '{ "private": true, "type": "module" }' > package.json \
            && npm install --silent --no-audit --no-fund "$@")
        echo "$*" > "$folder/.packages"
    fi
}

python_sdk venv "mcp[ws]==1.30.0" "mcp.client.websocket, websockets"
python_sdk venv2 "mcp==2.3.0" "mcp.client.streamable_http"
npm_packages ts "@modelcontextprotocol/sdk@1.32.2" "ws@8.23.0"
npm_packages ts2 "@modelcontextprotocol/client@2.4.0"
npm_packages conformance "@modelcontextprotocol/conformance@0.2.0-alpha.12" "node@22"
npm_packages inspector "@modelcontextprotocol/inspector@2.12.0"
npm_packages browser "playwright-core@1.65.1"
python_sdk kubernetes "kubernetes-validate==1.37.0" "kubernetes_validate"
export ZEROMESH_MCP_PYTHON="$mcp_clients/venv/bin/python"
export ZEROMESH_MCP_PYTHON2="$mcp_clients/venv2/bin/python"
export ZEROMESH_MCP_TS_DIR="$mcp_clients/ts"
export ZEROMESH_MCP_TS2_DIR="$mcp_clients/ts2"
export ZEROMESH_MCP_CONFORMANCE_DIR="$mcp_clients/conformance"
export ZEROMESH_MCP_INSPECTOR_DIR="$mcp_clients/inspector"
export ZEROMESH_PLAYWRIGHT_DIR="$mcp_clients/browser"
export ZEROMESH_KUBERNETES_VALIDATE="$mcp_clients/kubernetes/bin/kubernetes-validate"
