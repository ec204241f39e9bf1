"""A small order-processing service used by `cargo xtask demo`. It knows nothing of libdebugger."""
