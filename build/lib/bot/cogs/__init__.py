"""Discord glue: one cog per concern, each thin (parse, call the domain, render)."""
