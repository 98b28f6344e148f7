"""Packaged terminology data: FHIR ConceptMaps/CodeSystem (JSON) and the diagnosis lexicon."""
