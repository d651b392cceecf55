"""NLQ head: VSLNet-style span localization on cached clip features and query text features."""
