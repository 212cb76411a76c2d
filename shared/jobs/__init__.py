"""A job in storage: where its files are (`paths`), its JSON blobs and their compare-and-swap (`blobs`), its typed
record and every change of its state (`record`), and the codec of its shard and result files (`shards`)."""
