"""Node agent: reads one site's own systems through an adapter and serves them as FHIR."""
