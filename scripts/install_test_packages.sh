#!/usr/bin/env bash
# Debian packages that some tests use as real services: Chromium for the report screenshot
# (tests/results/test_results.py), Slurm + munge for the cluster tests (tests/launch/
# test_slurm.py start a one-node Slurm on 127.0.0.1). Best effort: without a package its
# tests are skipped, each naming the reason, and nothing else changes.
set -uo pipefail
# "command the package provides:packages to install"
WANTED=("chromium:chromium" "slurmctld:slurm-wlm munge")
missing=()
for entry in "${WANTED[@]}"; do
    command -v "${entry%%:*}" >/dev/null 2>&1 || missing+=(${entry#*:})
done
[ ${#missing[@]} = 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_test_packages: ${missing[*]} not installed and apt-get unavailable (not" \
         "root?): the tests that need them will be skipped"
    exit 0
fi
echo "install_test_packages: apt-get install ${missing[*]} (once, a minute or two)"
if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      "${missing[@]}" >/dev/null); then
    echo "install_test_packages: ${missing[*]} could not be installed: the tests that need" \
         "them will be skipped"
fi
exit 0
