#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# Writes the seed corpus of t/fuzz/fuzz_body.c into t/fuzz/corpus/: one
# small body per call type, a batch, an Amplitude body, and compressed
# ones.  Each file is the route byte (ngx_http_cio_call_e), the flags byte
# (bit 0 compressed, 1 native screens, 2 client address, 3 deny filters,
# 4 allow filter, 5 extra device event) and the body.  Deterministic
# (gzip -n), so that rerunning it changes nothing.
set -eu

dir="$(cd "$(dirname "$0")" && pwd)/corpus"
mkdir -p "$dir"

# seed NAME ROUTE FLAGS [gzip|gzip2|zlib] < body
seed() {
    local name=$1 route=$2 flags=$3 how=${4:-} body
    body=$(cat)
    {
        printf "\\$(printf '%03o' "$route")\\$(printf '%03o' "$flags")"
        case "$how" in
        gzip)  printf '%s' "$body" | gzip -n -9 -c ;;
        # two members, as gzip writes concatenated files
        gzip2) printf '%s' "${body:0:40}" | gzip -n -c
               printf '%s' "${body:40}" | gzip -n -c ;;
        zlib)  printf '%s' "$body" \
                   | perl -MIO::Compress::Deflate=deflate \
                          -e 'deflate(\*STDIN => \*STDOUT) or die' ;;
        *)     printf '%s' "$body" ;;
        esac
    } > "$dir/$name"
}

seed identify 1 4 <<'EOF'
{"userId":"u-42","traits":{"email":"ada@example.com","name":"Ada","createdAt":"2023-01-02T03:04:05.123456+02:00","plan":"pro"},"context":{"ip":"198.51.100.1","traits":{"email":"old@example.com"}},"anonymousId":"a-1","messageId":"m-1","writeKey":"wk"}
EOF

seed track 2 0 <<'EOF'
{"userId":"cio_abc","event":"Order Completed","properties":{"total":42.5,"currency":"EUR","at":"2023-11-14T22:13:20Z","items":[{"sku":"x","n":1}]},"originalTimestamp":"2023-11-14T22:13:19.5Z","sentAt":"2023-11-14T22:13:21.000Z","messageId":"m-2"}
EOF

seed track-device 2 32 <<'EOF'
{"userId":7,"event":"Application Installed","properties":{"version":"1.2"},"context":{"device":{"token":"tok-1","type":"iOS","model":"iPhone"},"os":{"name":"iOS"},"app":{"version":"1.2"},"locale":"fr-FR"},"timestamp":1700000000000}
EOF

seed page 3 0 <<'EOF'
{"anonymousId":"a-9","name":"Pricing","category":"Docs","properties":{"url":"https://example.com/pricing","title":"Pricing"},"context":{"page":{"url":"https://example.com/pricing"}},"timestamp":"2023-11-14T22:13:20+0100"}
EOF

seed screen 4 2 <<'EOF'
{"userId":"ada@example.com","name":"Home","properties":{"name":"Home","from":"Ünïcödé 😀"}}
EOF

seed group 5 0 <<'EOF'
{"userId":"u-42","groupId":12345,"traits":{"name":"Acme","objectTypeId":"2","employees":100}}
EOF

seed alias 6 0 <<'EOF'
{"userId":"u-42","previousId":"a-1"}
EOF

seed batch 7 8 <<'EOF'
{"batch":[{"type":"identify","userId":"u-1","traits":{"email":"a@b.co"}},{"type":"track","userId":"u-1","event":"Spam"},{"type":"track","anonymousId":"a","event":"Signed Up","context":{"consentManagement":{"deniedConsentIds":["advertising"]}}},{"type":"page","userId":"u-1","name":"Home"},{"type":"screen","userId":"u-1"},{"type":"group","userId":"u-1","groupId":"g"},{"type":"alias","userId":"u-1","previousId":"a"},{"type":"bogus"},3],"context":{"library":{"name":"analytics-node"}},"integrations":{"All":true},"sentAt":"2023-11-14T22:13:25Z","writeKey":"wk"}
EOF

seed batch-allow 7 16 <<'EOF'
{"batch":[{"type":"track","userId":"u-1","event":"Order Completed"},{"type":"track","userId":"u-1","event":"Other"},{"type":"track","userId":"u-1","event":"User Deleted"},{"type":"track","userId":"u-1","event":"Device Deleted","context":{"device":{"token":"t"}}}]}
EOF

seed batch-gzip 7 1 gzip <<'EOF'
{"batch":[{"type":"track","userId":"u-1","event":"Order Completed","properties":{"total":1}},{"type":"identify","userId":"u-2","traits":{"name":"B"}}],"sentAt":"2023-11-14T22:13:25Z"}
EOF

seed track-gzip2 2 1 gzip2 <<'EOF'
{"userId":"u-42","event":"Product Viewed","properties":{"sku":"sku-1","price":9.99}}
EOF

seed identify-zlib 1 1 zlib <<'EOF'
{"userId":"u-43","traits":{"email":"b@example.com","unsubscribed":false}}
EOF

seed amplitude 8 4 <<'EOF'
{"api_key":"key","events":[{"user_id":"u-1","device_id":"d-1","event_type":"Song Played","time":1700000000000,"insert_id":"i-1","ip":"$remote","event_properties":{"title":"x"},"user_properties":{"plan":"pro"},"groups":{"company":"Acme"}},{"device_id":"d-2","event_type":"$identify","user_properties":{"$set":{"a":1},"$setOnce":{"b":2}}},{"user_id":"u-3","event_type":"$groupidentify","groups":{"company":"Acme"},"group_properties":{"$set":{"size":3}}}],"options":{"min_id_length":1}}
EOF

seed amplitude-gzip 8 1 gzip <<'EOF'
{"api_key":"key","events":[{"user_id":"u-1","event_type":"Clicked","time":1700000000123}]}
EOF

# analytics.js sends text/plain to /v1/t with the write key in the body
seed track-browser 2 6 <<'EOF'
{"type":"track","event":"Viewed X Screen","anonymousId":"a-b-c","properties":{"long":"xééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé"},"context":{"page":{"url":"https://x.example/"},"userAgent":"Mozilla/5.0"},"writeKey":"wk","sentAt":"2023-11-14T22:13:20.123Z"}
EOF

# the limits, which the fuzzer reaches only slowly from small inputs

# special track names, identifiers too large or too long, long names
seed batch-limits 7 0 <<'EOF'
{"batch":[{"type":"track","userId":"u-1","event":"User Suppressed"},{"type":"track","userId":"u-1","event":"User Unsuppressed"},{"type":"track","anonymousId":"a","event":"User Deleted"},{"type":"identify","userId":12345678901234567890},{"type":"track","anonymousId":98765432109876543210,"event":"e"},{"type":"identify","userId":"iiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiii"},{"type":"track","userId":"u","event":"e","properties":{"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn":1}},{"type":"group","userId":"u","groupId":"g","traits":{"object_type_id":3}}]}
EOF

# the decisions of docs/mapping.md §11: integrations, deletions, group
# actions, placeholder ids, impossible times, \u0000 escapes, nesting
seed batch-contract 7 0 <<'EOF'
{"integrations":{"All":false},"sentAt":"0001-01-01T00:00:00Z","batch":[{"type":"track","userId":"u","event":"Object Deleted","properties":{"objectId":"o","objectTypeId":2},"integrations":{"Customer IO":true}},{"type":"track","anonymousId":"a","event":"Relationship Deleted","context":{"groupId":7}},{"type":"group","userId":"cio_","anonymousId":"00000000-0000-0000-0000-000000000000","groupId":"g","traits":{"action":"delete_relationships","relationshipAttributes":{"r":1}}},{"type":"identify","userId":"u","groupId":"g","traits":{"created_at":"","createdAt":1600000000}},{"type":"track","userId":"u","event":"e","timestamp":-5,"properties":{"a":[[[[{"b":"x\u0000y"}]]]]}},{"type":"track","userId":"u\u0000v","event":"e"}]}
EOF

seed amplitude-ids 8 0 <<'EOF'
{"api_key":"key","options":{"min_id_length":3},"events":[{"user_id":"ab","event_type":"e"},{"device_id":"null","event_type":"e"},{"user_id":"abc","event_type":"e","time":1700000000}]}
EOF

# 2501 calls: one over max_batch_calls
printf '{"batch":[%s0]}' "$(printf '0,%.0s' $(seq 2500))" \
    | seed batch-too-many 7 0

# 310 attributes: the first 300 are kept
printf '{"userId":"u","event":"e","properties":{%s"last":0}}' \
    "$(for i in $(seq 309); do printf '"p%d":%d,' "$i" "$i"; done)" \
    | seed track-many-attrs 2 0

# 34 values of 999 bytes: the item is over max_item_size
printf '{"userId":"u","event":"e","properties":{%s"last":0}}' \
    "$(v=$(printf 'v%.0s' $(seq 999))
       for i in $(seq 34); do printf '"p%d":"%s",' "$i" "$v"; done)" \
    | seed track-too-big 2 0

# 600 calls from 1k of gzip: the output buffer grows several times
printf '{"batch":[%s{"type":"page","userId":"u","name":"n"}]}' \
    "$(printf '{"type":"track","userId":"u","event":"e%.0s"},' \
           $(seq 599))" \
    | seed batch-gzip-big 7 1 gzip

# 2 MB of spaces: over the 1 MB inflate limit
head -c 2097152 /dev/zero | tr '\0' ' ' | seed bomb-gzip 2 1 gzip


# the fast path's shapes (t/fuzz/fuzz_diff.c): the SDKs' calls as sent
for c in identify:1 track:2 page:3; do
    seed "fast-${c%%:*}" "${c##*:}" 0 \
        < "$dir/../../../bench/payloads/${c%%:*}.json"
done

seed fast-batch 7 8 < "$dir/../../../bench/payloads/batch20.json"

sed "s/LATIN1/$(printf 'caf\351')/" <<'EOF' | seed fast-escapes 2 0
{"userId":"caf\u00e9@example.com","event":"Caf\u00e9 \ud83d\ude00 \"q\"","properties":{"a\/b":"\u001f\t\n","n":[1.0,-0,1e3,0.00001,123456789012345678,18.99],"d":"2023-01-02","long\u0020key":{"x":[true,false,null,{}]},"lat":"LATIN1"},"anonymousId":12345,"messageId":"m-\u0031","timestamp":1700000000.5,"integrations":{"All":false,"Customer.io":true}}
EOF

seed fast-batch-context 7 0 <<'EOF'
{"batch":[{"type":"identify","traits":{"created_at":"","createdAt":1700000000123,"n":1},"anonymousId":"a-9","messageId":"m-3"},{"type":"Screen","name":"Home","userId":7,"messageId":"m-4","context":{"page":{}}},{"type":"page","anonymousId":"a-9","messageId":"m-5"}],"context":{"page":{"url":"https://example.com/"},"traits":{"email":"b@example.com"},"consentManagement":{"deniedConsentIds":["C0001"]}},"sentAt":"2023-11-14T22:13:21Z","writeKey":"wk"}
EOF

ls "$dir" | wc -l | xargs echo "corpus: files in $dir:"
