"""The dashboard: a static page (no inline script or style) and the JSON API it reads and acts through."""
