#!/usr/bin/env bash
# Installs what the tests use besides the Rust toolchain, on a fresh
# machine: the first half of the README's test command
# (`tests/setup.sh && cargo test --workspace`), and what .ci/run runs.
# Each part is checked first, so a second run installs nothing and takes
# a second or two. Debian packages need root (or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages, as command:package:
# - python3: Python's standard library is the tests' independent oracle
#   (csv, json), and runs the Lambda functions of the tests;
# - chromium: the report tests load report pages in a real browser,
#   headless (tests/fixtures/report_check.py);
# - node, npm: serverless-offline and Azurite (below);
# - ip (iproute2): hosts in network namespaces for the remote tests;
# - setsid (util-linux): the process-lifetime tests' functions;
# - openssl: a CA and a certificate for the https:// input test's server;
# - redis-server (with redis-cli): the Redis Streams source's server, and
#   its tests' producer.
missing=()
for pair in python3:python3 chromium:chromium node:nodejs npm:npm ip:iproute2 setsid:util-linux openssl:openssl \
    redis-server:redis-server; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update
    $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi

# Python packages (wheels; nothing to compile), pinned, as
# module:requirement:
# - awslambdaric: AWS's own Lambda runtime client, for the lambda backend;
# - boto3: AWS's own SDK, driving `fanout serve`'s Lambda Invoke API and
#   checking what fanout left in S3;
# - functions-framework: Google's runtime for Cloud Functions and Cloud
#   Run, a real HTTP FaaS runtime for the http backend;
# - pyarrow, duckdb, xxhash: independent oracles for Parquet and Arrow
#   files, queries, and the output manifest's checksum;
# - moto[server]: S3, Kinesis and SQS servers on loopback, for inputs and
#   outputs in object storage and for streams;
# - azure-storage-blob: Azure's own SDK, putting data into Azurite and
#   checking what fanout left there.
wanted=()
for pair in awslambdaric:awslambdaric==4.2.2 functions_framework:functions-framework==3.10.2 \
    boto3:boto3==1.43.11 pyarrow:pyarrow==26.0.1 duckdb:duckdb==2.0.1 xxhash:xxhash==4.1.0 \
    moto.server:moto[server]==5.2.1 azure.storage.blob:azure-storage-blob==12.31.1; do
    python3 -c "import ${pair%%:*}" 2>/dev/null || wanted+=("${pair#*:}")
done
if [ ${#wanted[@]} -gt 0 ]; then
    python3 -m pip install --quiet --disable-pip-version-check --only-binary=:all: "${wanted[@]}"
fi

# npm packages, pinned in their fixtures' package-lock.json:
# - serverless-offline: a local implementation of the AWS Lambda Invoke
#   API, for the aws_lambda backend;
# - Azurite: Microsoft's Azure Storage emulator, for az:// inputs,
#   outputs and shuffles.
for fixture in serverless-offline:serverless azurite:azurite-blob; do
    dir=tests/fixtures/${fixture%%:*}
    if [ ! -x "$dir/node_modules/.bin/${fixture#*:}" ]; then
        (cd "$dir" && npm ci --no-audit --no-fund --silent)
    fi
done
