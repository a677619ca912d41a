#!/usr/bin/env bash
# Print this machine's public IPv4 address (for allowedCidrs: auto).
#
# Inputs: none. Output: one IPv4 address on stdout; exit 1 if no service answered.
# Several services are tried because some are unreachable from mainland China.
set -euo pipefail

readonly SERVICES=(
  "https://ipv4.icanhazip.com"
  "https://api.ipify.org"
  "https://myip.ipip.net/s"
  "https://ifconfig.me/ip"
)

is_ipv4() {
  [[ "$1" =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}$ ]]
}

main() {
  local url answer
  for url in "${SERVICES[@]}"; do
    answer=$(curl -4 -fsS --max-time 5 "$url" 2>/dev/null | tr -d '[:space:]') || continue
    if is_ipv4 "$answer"; then
      printf '%s\n' "$answer"
      return 0
    fi
  done
  echo "could not detect your public IP from: ${SERVICES[*]}" >&2
  return 1
}

main "$@"
