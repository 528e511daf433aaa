"""Everything that talks to PostgreSQL: connections, migrations and the queries."""
