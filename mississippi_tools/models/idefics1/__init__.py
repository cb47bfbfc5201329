"""IDEFICS 1 (idefics-9b, idefics-80b, their -instruct): a generate backend, native classes."""
