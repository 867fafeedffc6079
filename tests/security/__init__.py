"""Security as deployed: the shipped mosquitto config and ACL, gateway provisioning, Kafka client security."""
