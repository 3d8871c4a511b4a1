#!/usr/bin/env bash
# Prints the path of a Chromium for the browser tests. Looks on PATH first, then
# installs Debian's `chromium` with apt-get where it can (root, apt available).
# Prints nothing and explains on stderr when it cannot; browser tests then skip
# with that reason, and CI (CI=true) fails instead of skipping.
set -u
for name in "${CHROMIUM:-}" chromium chromium-browser google-chrome; do
  [ -n "$name" ] || continue
  if path=$(command -v "$name" 2>/dev/null) && "$path" --version >/dev/null 2>&1; then
    echo "$path"; exit 0
  fi
done
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "find_chromium: installing Debian's chromium with apt-get (one time)..." >&2
  if { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/tmp/find_chromium.log 2>&1 \
      && command -v chromium >/dev/null 2>&1; then
    command -v chromium; exit 0
  fi
  echo "find_chromium: apt-get install chromium failed; see /tmp/find_chromium.log" >&2
else
  echo "find_chromium: no Chromium found and cannot install one (needs root and apt-get)." >&2
  echo "find_chromium: install Chromium and set CHROMIUM=/path/to/chromium to run the browser tests." >&2
fi
exit 0
