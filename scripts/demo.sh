#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# make demo: nginx with the module on 127.0.0.1, the project's Customer.io
# stand-in behind it, a few real Segment-shaped calls sent with curl, and
# what Customer.io received, shown item by item.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d /tmp/cio-demo-XXXXXX)
chmod 755 "$dir"

pids=()
cleanup() {
    [ -f "$dir/nginx.pid" ] && kill -QUIT "$(cat "$dir/nginx.pid")" 2>/dev/null
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() {
    perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(
        LocalAddr => "127.0.0.1", LocalPort => 0, Listen => 1)->sockport'
}

wait_for() { # seconds, command...
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.1
    done
}

echo "== starting the Customer.io stand-in (site id demo_site)"
perl "$top/t/cio-standin.pl" --listen 127.0.0.1:0 --quiet \
    --workspace demo_site:demo_api_key --record "$dir/received.jsonl" \
    > "$dir/standin.out" 2> "$dir/standin.log" &
pids+=($!)
wait_for 10 grep -qs listening "$dir/standin.out"
cio=$(sed -n 's/.*listening on \(.*\)/\1/p' "$dir/standin.out")
port=$(free_port)

user=""
[ "$(id -u)" -eq 0 ] && user="user root;"

sed -e "s|load_module .*;|load_module $top/build/ngx_http_cio_module.so;|" \
    -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" -e "s|@CIO@|http://$cio|g" \
    -e "s|@USER@|$user|" \
    "$top/scripts/demo.conf" > "$dir/nginx.conf"

echo "== starting nginx on 127.0.0.1:$port (config: $dir/nginx.conf)"
/usr/sbin/nginx -p "$dir/" -c nginx.conf -e "$dir/error.log"
wait_for 10 test -s "$dir/nginx.pid"

api="http://127.0.0.1:$port/cio/v1"
auth=(-u demo_write_key:)
now=$(date -u +%Y-%m-%dT%H:%M:%S.000Z)

send() { # route, body
    printf '\n-> POST /cio/v1/%s %s\n<- ' "$1" "$2"
    curl -s -w ' (%{http_code})' "${auth[@]}" -H 'Content-Type: application/json' \
        --data-binary "$2" "$api/$1"
    echo
}

echo "== sending calls the way Segment/RudderStack SDKs do"
send identify '{"userId":"u-42","anonymousId":"anon-7","traits":{"email":"ada@example.com","plan":"pro","createdAt":"2024-01-02T03:04:05Z"}}'
send track "{\"userId\":\"u-42\",\"event\":\"Order Completed\",\"properties\":{\"total\":42.5,\"currency\":\"EUR\"},\"timestamp\":\"$now\",\"messageId\":\"demo-1\"}"
send page "{\"anonymousId\":\"anon-7\",\"name\":\"Pricing\",\"properties\":{\"url\":\"https://example.com/pricing\"},\"timestamp\":\"$now\"}"
send screen "{\"userId\":\"ada@example.com\",\"name\":\"Home\",\"timestamp\":\"$now\"}"
send batch '{"batch":[{"type":"track","userId":"u-42","event":"Signed Up"},{"type":"track","userId":"u-42"}]}'
printf '\n-> POST /cio/v1/track with a wrong write key\n<- '
curl -s -w ' (%{http_code})' -u wrong: --data-binary '{"userId":"u","event":"E"}' "$api/track"
echo

echo
echo "== what Customer.io received (POST /api/v2/batch, Basic demo_site:...)"
arrived() { # the 5 accepted calls are 5 items at Customer.io
    [ "$(cat "$dir/received.jsonl" 2>/dev/null | wc -l)" -ge 5 ]
}
if ! wait_for 10 arrived; then
    echo "not everything arrived in 10 s; error log:" >&2
    cat "$dir/error.log" >&2
    exit 1
fi

perl -MJSON::PP -ne '
    my $r = decode_json($_);
    printf "\nrequest %d, item %d, site %s:\n%s", $r->{seq}, $r->{index},
        $r->{site_id}, JSON::PP->new->canonical->pretty->encode($r->{item});
' "$dir/received.jsonl"

echo
echo "== requests Customer.io answered"
perl -MJSON::PP -ne '
    my $r = decode_json($_);
    printf "request %d: %d, %d items, %d bytes\n",
        $r->{seq}, $r->{status}, $r->{items}, $r->{bytes};
' "$dir/received.jsonl.requests" 2>/dev/null || true
echo
echo "demo files are in $dir"
