"""Sinks: consumers that copy Kafka topics into stores other rooms and screens read (InfluxDB for Grafana)."""
