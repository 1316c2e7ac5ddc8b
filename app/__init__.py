"""twokey: a two-person rule in front of every identity change a help desk makes."""
