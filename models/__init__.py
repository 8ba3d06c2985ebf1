"""What the API and the workers share: settings, tables, states, params, registry, storage."""
