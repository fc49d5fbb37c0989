"""Tests of the write side: the enqueue helpers and the library write API."""
