"""Native VLM_WebSight_finetuned ("VMistral"): screenshots to HTML/CSS, no remote code."""
