"""crib's tests: unit (pure logic) and integration (root, real components)."""
