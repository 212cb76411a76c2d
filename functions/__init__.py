"""One blueprint per trigger; each turns its trigger into one call into `shared.pipeline`."""
