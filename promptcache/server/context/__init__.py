"""Context sessions (/v1/context): a prefix kept warm for a TTL and extended turn after turn."""
