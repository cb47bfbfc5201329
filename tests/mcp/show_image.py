"""Show a PNG at the top-left corner of the X display in $DISPLAY, borderless, until killed.

Usage: python show_image.py IMAGE.png TITLE. Prints ``ready`` once the image is on the screen (the
window is viewable and drawn), so that a test waiting on that line knows it can capture it.
"""

from __future__ import annotations

import sys
import tkinter as tk


def main() -> None:
    path, title = sys.argv[1], sys.argv[2]
    root = tk.Tk()
    root.title(title)
    photo = tk.PhotoImage(file=path)
    root.geometry(f"{photo.width()}x{photo.height()}+0+0")
    label = tk.Label(root, image=photo, borderwidth=0, highlightthickness=0)
    label.pack()
    while not label.winfo_viewable():
        root.update()
    root.update()
    print("ready", flush=True)
    root.mainloop()


if __name__ == "__main__":
    main()
