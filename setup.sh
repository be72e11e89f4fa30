#!/bin/sh
# Heroku: write Streamlit's server settings before the web process starts.
# Headless, bound to Heroku's $PORT on all interfaces; CORS and XSRF protection stay on;
# a public visitor gets no developer toolbar (Deploy, rerun, clear cache) and no tracebacks.
set -eu
mkdir -p "$HOME/.streamlit"
cat > "$HOME/.streamlit/config.toml" <<TOML
[server]
headless = true
port = ${PORT:-8501}
address = "0.0.0.0"

[browser]
gatherUsageStats = false

[client]
toolbarMode = "viewer"
showErrorDetails = "none"
TOML
