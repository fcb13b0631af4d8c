import './globals.css'

export const metadata = { title: 'imgopt e2e site' }

export default function RootLayout({ children }) {
  return (
    <html lang="en">
      <body>{children}</body>
    </html>
  )
}
