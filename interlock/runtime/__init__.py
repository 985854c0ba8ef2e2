"""Where components run and how tensors move: transports, receives posted ahead, slow links, launching ranks."""
