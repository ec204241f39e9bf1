//! PEP 768 (CPython 3.14 `sys.remote_exec` protocol): in progress.
