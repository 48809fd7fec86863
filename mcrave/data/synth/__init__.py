"""Seeded synthetic multichannel corpus: materials, rooms and mic arrays, scenes, files."""
