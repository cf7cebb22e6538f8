#!/usr/bin/env bash
# Debian's Chromium for the report screenshot test (tests/results/test_results.py).
# Best effort: without it that one test is skipped, with the reason, and nothing else changes.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: chromium not found and apt-get unavailable (not root?):" \
         "the report screenshot test will be skipped"
    exit 0
fi
echo "install_browser: apt-get install chromium (once, about a minute)"
if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
      >/dev/null); then
    echo "install_browser: chromium could not be installed: the report screenshot test will" \
         "be skipped"
fi
exit 0
