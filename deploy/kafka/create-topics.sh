#!/usr/bin/env bash
# Create SiteWatch's topics on a production Apache Kafka (KRaft) cluster.
# Partitions bound how many worker processes share the load: one partition is processed by one worker.
# sw.config has exactly one partition (config is a total order); every worker reads all of it.
set -euo pipefail
BOOTSTRAP=${BOOTSTRAP:?set BOOTSTRAP=host:9092}
PARTITIONS=${PARTITIONS:-48}
RF=${RF:-3}
CMD=${KAFKA_TOPICS:-kafka-topics.sh}
for t in sw.raw sw.readings sw.readings.dlq sw.hazards sw.alerts; do
  "$CMD" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists --topic "$t" \
    --partitions "$PARTITIONS" --replication-factor "$RF" --config min.insync.replicas=2
done
"$CMD" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists --topic sw.config \
  --partitions 1 --replication-factor "$RF" --config min.insync.replicas=2 --config cleanup.policy=compact
# The detect stage's state changelog (Faust: <SW_WORKER_ID>-device-state-changelog), created here so that it is
# replicated like the rest: left to Faust it would be created with replication factor 1. Same partition count as
# the worker's SW_KAFKA_PARTITIONS.
"$CMD" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists --topic "${WORKER_ID:-sitewatch-worker}-device-state-changelog" \
  --partitions "$PARTITIONS" --replication-factor "$RF" --config min.insync.replicas=2 --config cleanup.policy=compact
# Keep raw and readings long enough to replay (backtest) and to ride out a long outage of a consumer.
"$CMD" --bootstrap-server "$BOOTSTRAP" --alter --topic sw.raw --config retention.ms=$((7*24*3600*1000)) 2>/dev/null || true
