"""The gateway's browser files (banner.js, banner.css, tracker.js), shipped inside the wheel."""
