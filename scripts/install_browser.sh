#!/usr/bin/env bash
# Installs Debian's chromium for the report's real-browser test where it can (root with apt-get, as in CI).
# Never fails the build: without a browser that one test skips and says why.
set -u
for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null 2>&1; then exit 0; fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium for the report browser test (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
        || echo "could not install chromium; the report browser test will skip"
else
    echo "no chromium and not root with apt-get; the report browser test will skip"
fi
exit 0
