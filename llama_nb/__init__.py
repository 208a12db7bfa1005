"""Baby Llama from Scratch: the package exported from the book's notebooks."""
