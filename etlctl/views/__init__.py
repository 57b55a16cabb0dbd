"""All output: tables, JSON, text lines and the countdown. Data in, text out."""
