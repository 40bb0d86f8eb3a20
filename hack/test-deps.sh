#!/usr/bin/env bash
# Installs the Debian packages the tests need, only those missing (`make test` runs it; so does CI through it).
# One entry per package: a command (or a file pattern) that shows it is installed, the package, and which tests
# use it.
set -euo pipefail
NEEDED=(
  "genhtml lcov"           # tests/test_report_formats.py opens `report --format lcov` in genhtml
  "xmllint libxml2-utils"  # tests/test_report_formats.py validates `report --format cobertura` against its DTD
  "chromium chromium"      # tests/test_report_page.py drives the HTML report in headless Chromium (playwright)
  "/usr/lib/postgresql/*/bin/initdb postgresql"  # tests/pgserver.py starts PostgreSQL servers for the store tests
)
missing=()
for entry in "${NEEDED[@]}"; do
  read -r command package <<<"$entry"
  command -v "$command" >/dev/null || compgen -G "$command" >/dev/null || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "test-deps: installing Debian packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
