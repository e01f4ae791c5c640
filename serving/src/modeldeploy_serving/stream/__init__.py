"""Stream inference: `modeldeploy stream` scores Kafka records with the same data plane as REST."""
