"""All output, one module per group of commands: data in, text out (stdout for data, stderr for notes)."""
