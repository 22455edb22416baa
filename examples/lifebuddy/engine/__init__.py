"""Life-Buddy's cognitive engine (the "Brain", ``engine.main:app``): only its database side lives here."""
