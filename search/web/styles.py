"""The page's own CSS and script: grids that follow the width, readable tables on phones."""

# Result grids follow the width (Gradio's galleries keep a fixed number of columns).
CSS = """
#results .grid-container { grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)) !important;
  grid-template-rows: none !important; }
#mine .grid-container { grid-template-columns: repeat(auto-fill, minmax(110px, 1fr)) !important;
  grid-template-rows: none !important; }
#example-images .grid-container { grid-template-columns: repeat(auto-fill, minmax(64px, 1fr)) !important; }
#query-image img { max-height: 300px; object-fit: contain; }
#compare-left .grid-container, #compare-right .grid-container {
  grid-template-columns: repeat(auto-fill, minmax(110px, 1fr)) !important; grid-template-rows: none !important; }
#results .grid-wrap, #mine .grid-wrap, #compare-left .grid-wrap, #compare-right .grid-wrap {
  overflow-y: visible !important; max-height: none !important; height: auto !important; }
/* The notes on an upload wrap anywhere (file names have no spaces) and scroll past a third of the screen; the
   shadows (backgrounds that scroll with the text, or stay) show only where there is more to scroll to. */
#ingest-notes { max-height: 35vh; overflow-y: auto; overflow-wrap: anywhere;
  background: linear-gradient(var(--block-background-fill) 30%, transparent) top / 100% 24px local no-repeat,
    linear-gradient(transparent, var(--block-background-fill) 70%) bottom / 100% 24px local no-repeat,
    radial-gradient(farthest-side at 50% 0, rgba(0, 0, 0, .2), transparent) top / 100% 10px scroll no-repeat,
    radial-gradient(farthest-side at 50% 100%, rgba(0, 0, 0, .2), transparent) bottom / 100% 10px scroll no-repeat; }
#evaluate-table { overflow-x: auto; }
#evaluate-table table { white-space: nowrap; }
/* One line over the thumbnail, as wide as it (Gradio's keeps 80%): a wrapped caption hid half the picture.
   The whole of it is in the detail view a click opens. */
#results .caption-label { max-width: 100%; box-sizing: border-box; }
#detail-image img { width: 100%; height: 100%; object-fit: contain; }
/* Gradio's gallery keeps its clicked slot framed after the server gives it new items (it drops a null
   selected_index from updates): after a mark re-ranks the results, or a delete, the frame sat on another
   image. The detail view and "Selected image" say what is chosen; the frame is not needed. */
#results .thumbnail-item.selected, #mine .thumbnail-item.selected {
  --ring-color: transparent; border-color: var(--border-color-primary); }
@media (max-width: 640px) {
  #results .grid-container { grid-template-columns: repeat(2, minmax(0, 1fr)) !important; }
  #results .caption-label { font-size: 11px; }
  #evaluate-table:has(table)::before {
    content: "Scroll the table sideways to see every column."; display: block; font-size: 12px; opacity: 0.7; }
}
"""

# On a phone the results are below the query panel: bring them into view once a search has run.
REVEAL_RESULTS = ("() => { if (window.innerWidth < 700) "
                  "document.getElementById('status')?.scrollIntoView({behavior: 'smooth', block: 'start'}); }")
