"""Tables, ladder diagrams and figures of captures and measurements."""
