"""leaderd benchmark harness (issue 7). See bench/README.md."""
