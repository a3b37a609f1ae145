#!/bin/sh
# get_config.sh [-o FILE] [-s] [-p] [DATESTR]: fetch the fplane file valid at
# DATESTR from a stationd node; the same flags as FPlaneServer's get_fplane.sh.
#
#   -o FILE  write to FILE (default fplane<DATESTR>.txt; today's date when
#            DATESTR is empty; - for standard output)
#   -s       short: active VIRUS units only (full_fplane=0)
#   -p       measured positions where known (actual_pos=1)
#   DATESTR  YYYYMMDD (that night), YYYYMMDDTHH:MM:SS, ISO 8601, latest;
#            empty: now
#
# Environment: STATIOND_URL (required, e.g. https://node:8443),
# STATIOND_API_KEY (when the node does not serve reads publicly),
# STATIOND_CA (PEM file to trust, e.g. the node's self-signed certificate).
set -eu

usage() { echo "usage: $0 [-o FILE] [-s] [-p] [DATESTR]" >&2; exit 2; }

output= full=1 actual=0
while getopts o:sph flag; do
    case $flag in
        o) output=$OPTARG ;;
        s) full=0 ;;
        p) actual=1 ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -le 1 ] || usage
datestr=${1:-}
: "${STATIOND_URL:?set STATIOND_URL to the node URL, e.g. https://localhost:8443}"
[ -n "$output" ] || output="fplane${datestr:-$(date +%Y%m%d)}.txt"

set -- --silent --show-error --fail-with-body --globoff
[ -z "${STATIOND_CA:-}" ] || set -- "$@" --cacert "$STATIOND_CA"
[ -z "${STATIOND_API_KEY:-}" ] || set -- "$@" --header "Authorization: FPS_API APIKEY=$STATIOND_API_KEY"
url="${STATIOND_URL%/}/fplane/${datestr}?actual_pos=${actual}&full_fplane=${full}"

if [ "$output" = - ]; then
    exec curl "$@" "$url"
fi
curl "$@" --output "$output.part" "$url" || { status=$?; cat "$output.part" >&2 2>/dev/null; rm -f "$output.part"; exit $status; }
mv "$output.part" "$output"
echo "$output"
